"""The h2k control plane: job API, agent registry, scheduler, dispatcher and job store."""
