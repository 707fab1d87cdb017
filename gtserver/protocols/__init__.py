"""Wire adapters: each subpackage speaks one client protocol to the shared core."""
