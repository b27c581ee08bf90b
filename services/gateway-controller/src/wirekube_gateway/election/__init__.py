"""Leader election on a Lease: the state machine (``elector``, pure) and the
loop that reads and writes the Lease (``leader``). Every writer in the
controller acts only while ``LeaderElection.is_leader()``."""
