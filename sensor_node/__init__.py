"""The screening device: MLX90640 thermal camera + MFRC522 card reader -> MQTT. Never imports TensorFlow."""
