"""The Faust runtime around :mod:`stream_rec`: decode a batch, call the library, send the results."""
