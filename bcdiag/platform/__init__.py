"""The platform around the app: JupyterHub, its services and accounts, the audit view."""
