"""VM migrations: durable objects that own the disk jobs moving one VM.

:mod:`.records` (the stored migration and its state table), :mod:`.intake` (a submitted spec
checked and completed), :mod:`.plan` (the jobs of each stage, pure), :mod:`.status` (state and
byte progress derived from the jobs, pure), :mod:`.driver` (the loop that advances migrations
stage by stage) and :mod:`.service` (the MigrationService servicer).
"""
