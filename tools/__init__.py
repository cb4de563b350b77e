"""How people drive stream_rec: the ``stream-rec`` command and its helpers."""
