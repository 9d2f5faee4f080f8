"""What a training process needs to honour spotguard's checkpoint contract.

``spotguard_checkpoint`` is a single stdlib-only module meant to be copied into a
training image; this package only lets spotguard's own tests import it.
"""
