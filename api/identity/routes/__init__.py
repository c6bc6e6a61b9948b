"""HTTP routes of the identity domain: thin wrappers over the services."""
