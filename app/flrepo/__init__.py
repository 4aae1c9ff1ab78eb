"""flrepo: the FL Repository — models, training results, strategies and transformations on MongoDB + GridFS."""

__version__ = "0.1.0"
