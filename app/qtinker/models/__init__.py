"""Models on disk: the catalog, downloading and importing (TF1 checkpoints converted in tf1/),
the local registry, and building students.
"""
