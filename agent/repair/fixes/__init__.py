"""The repair actions that edit guest files, one module each."""
