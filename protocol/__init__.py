"""Shared h2k protocol package: the v1 job-spec model, the state table, proto conversion."""
