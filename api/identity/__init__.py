"""Identity and tenancy: organizations, roles, users, API keys, login."""
