"""Emulated chips, so the real drivers run where no hardware exists.

Nothing here talks to hardware. `mlx90640_chip` answers the MLX90640's I2C protocol with a
consistent calibration and frame RAM; `mfrc522_chip` answers the MFRC522's SPI register
protocol for ISO 14443-3 cards (4-, 7- and 10-byte UIDs, several at once) in its field, under
the project's own driver (`sensor_node.mfrc522_reader`). They exist for tests and demos; on a
Raspberry Pi the sensor uses the real buses.
"""
