"""Entry points: the CLI, the webhook/API server, the task worker and the admin console. They stay thin."""
