"""Who may log in to the broker, with which role: the registry kept next to the password file.

Usernames are chosen so a service can never pass for a device: a device's username is its
device id (`[a-z0-9-]{1,32}`, see `contract.ids`), a service's is `<role>.<name>`, and
the dot cannot appear in a device id. Mosquitto applies the device `pattern` lines to every
user, so a service may write `thermo/v1/inference.gpu-1/frame`; no consumer accepts that
topic (its device-id level is invalid, so it is dead-lettered), and no device id can be
spelt that way, so no real device's topics are reachable through it.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from contract.ids import validate_device_id, validate_node_id

REGISTRY_VERSION = 1
SERVICE_SEPARATOR = "."


class Role(StrEnum):
    """What an account may do; the ACL (broker/acl.py) spells it out topic by topic."""

    DEVICE = "device"
    INFERENCE = "inference"
    BRIDGE = "bridge"
    ADMIN = "admin"


SERVICE_ROLES = (Role.INFERENCE, Role.BRIDGE, Role.ADMIN)


def device_username(device_id: str) -> str:
    """A device logs in as its device id (which the ACL's `%u` patterns then put in topics)."""
    return validate_device_id(device_id)


def service_username(role: Role, name: str) -> str:
    """`<role>.<name>`: the dot makes it impossible to confuse with a device id.

    A service may not be named after another role: it may write dead letters under its own
    name, and `deadletter/inference` must come from inference nodes only (likewise bridge).
    """
    if role not in SERVICE_ROLES:
        raise ValueError(f"role must be one of {', '.join(r.value for r in SERVICE_ROLES)}, got {role!r}")
    validate_node_id(name)
    if name in {r.value for r in Role} - {role.value}:
        raise ValueError(f"a {role.value} service cannot be named {name!r}: that is another role's name")
    return f"{role.value}{SERVICE_SEPARATOR}{name}"


class Account(BaseModel):
    """One login. `node_id` is the service's name in `thermo/v1/nodes/<node_id>/...` (None for devices)."""

    model_config = ConfigDict(extra="forbid")

    username: str
    role: Role
    node_id: str | None = None
    created: dt.datetime


class BrokerSetup(BaseModel):
    """What `broker init` chose; add/remove need it to regenerate files and print connection hints."""

    model_config = ConfigDict(extra="forbid")

    port: int = Field(ge=1, le=65535)
    tls_port: int = Field(ge=1, le=65535)
    tls_bind: str | None
    hostnames: list[str]
    #: The user Mosquitto runs as after dropping root; the files it reads belong to this user.
    broker_user: str
    #: The broker replaces client ids by usernames (one live connection per account).
    username_as_clientid: bool = True


class Registry(BaseModel):
    """The contents of `accounts.json`: the broker setup and every account, by username."""

    model_config = ConfigDict(extra="forbid")

    version: int = REGISTRY_VERSION
    broker: BrokerSetup
    accounts: dict[str, Account] = Field(default_factory=dict)

    def node_owner(self, node_id: str) -> Account | None:
        """The service that already uses `node_id` for its status/metrics topics, if any."""
        return next((a for a in self.accounts.values() if a.node_id == node_id), None)
