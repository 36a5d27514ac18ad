"""Emulated chips and stand-in modules, so the real drivers run where no hardware exists.

Nothing here talks to hardware. `mlx90640_chip` answers the MLX90640's I2C protocol with a
consistent calibration and frame RAM; `mfrc522_chip` answers the MFRC522's SPI register
protocol for a card in its field; `rpi_stand_ins` provides stand-in `RPi.GPIO` and `spidev`
modules (there is no SPI bus or GPIO on a build machine) that route the real `mfrc522`
package to such an emulated chip. They exist for tests and demos; on a Raspberry Pi the
sensor uses the real buses.
"""
