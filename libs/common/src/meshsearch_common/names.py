"""Names of collections and tenants, shared by the api (which gives each tenant its own
namespace of collections) and the search service (which stores them).

A collection is stored under `<tenant>/<name>`, or under its bare name for the default tenant
(the one every call acts as when auth is off), so collections made before tenants existed
stay where they were. `/` is not allowed in a public name, so one tenant can never spell
another's stored name.
"""

from __future__ import annotations

import re

COLLECTION_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
COLLECTION_NAME_RULE = "1-63 characters of a-z, 0-9 and _, starting with a letter"
TENANT = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
TENANT_RULE = "1-32 characters of a-z, 0-9, _ and -, starting with a letter"
STORED_COLLECTION_NAME = re.compile(r"^(?:[a-z][a-z0-9_-]{0,31}/)?[a-z][a-z0-9_]{0,62}$")
TENANT_SEPARATOR = "/"
