"""Dispatching: placing queued jobs on agents, following their streams, supervising them.

One module per concern: :mod:`.dispatcher` (the loop), :mod:`.scheduling_pass` and
:mod:`.assignment` (which queued jobs start where), :mod:`.following` (a job's event stream),
:mod:`.supervision` (leases, deadlines, retries), :mod:`.reconcile` (what agents report),
:mod:`.takeover` (streams of other replicas), :mod:`.cancellation` and :mod:`.requeue`.
Servicers depend only on :mod:`.handles`.
"""
