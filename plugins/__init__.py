"""runner's built-in components, each module a plugin registered the way a third-party one is."""
