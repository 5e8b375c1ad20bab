"""The ground every stage stands on: where files live, the one user-facing error, progress events,
typed configs, safe names and temporary files, the machine-wide lock, process identity.
"""
