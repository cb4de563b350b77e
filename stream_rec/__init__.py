"""stream_rec: a streaming, online-learning recommender for e-commerce.

The package is a pure library (events, models, ranking, state, evaluation). It never imports
Faust or a Kafka client: the Faust runtime lives in ``agents/`` and the command line in ``tools/``.
"""

__version__ = "0.1.0"
