"""Google's TF1 BERT checkpoints, read and converted without TensorFlow.
"""
