"""Online recommendation models behind one contract (see :mod:`stream_rec.models.base`)."""
