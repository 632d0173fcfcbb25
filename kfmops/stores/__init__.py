"""Where kfmops keeps what must survive a command and be shared by every runner of a workspace.

State, history (with inverse plans), WAL records, the ledger's chain and the lock each sit behind an
interface in `base`; the folder store (files under `state/`) is the default implementation. Nothing
above this package knows which store it talks to.
"""
