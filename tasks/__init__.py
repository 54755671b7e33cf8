"""Built-in Lightning tasks (installed as `attnlab.tasks`); they use only attnlab's public API."""
