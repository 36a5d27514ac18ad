"""Model training and evaluation. TensorFlow/Keras lives here and nowhere else."""
