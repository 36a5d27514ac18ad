"""The one error type raised for anything that breaks the contract."""


class ContractError(ValueError):
    """A payload, topic or identifier that does not satisfy the MQTT contract.

    The message is one line that says precisely what is wrong, so it can go straight into a
    dead-letter message or a CLI error.
    """
