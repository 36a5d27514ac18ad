"""The cloud bridge: MQTT -> durable on-disk queue -> InfluxDB / Firestore / local archive."""
