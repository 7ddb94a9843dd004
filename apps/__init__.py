"""deepapps apps: each is a folder with an AppSpec registered in pyproject.toml."""
