"""Users, roles, sessions and API tokens: who may call the admin API and see what."""
