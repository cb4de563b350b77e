"""The engine: the compiled learning loop (:mod:`~stream_rec.engine.loop`) and the hand-over between
its two threads (:mod:`~stream_rec.engine.handover`). The sources it ranks with are registered in
:mod:`stream_rec.sources`; how their lists are fused is :mod:`stream_rec.fusion`."""
