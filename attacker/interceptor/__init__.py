"""The eavesdropper at run time: the interceptor (attacker + scorer over a run folder's captures), its worker
service beside a federation, the on-path HTTP proxy of deployments and the runs it sees."""
