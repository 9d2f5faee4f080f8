"""The cluster audit: every pod and workload already in the cluster judged with the policy,
from the CLI (``spotguard audit``) or in the background of ``spotguard serve``."""
