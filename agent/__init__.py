"""The h2k node agent: detects capabilities, runs disk jobs, streams progress."""
