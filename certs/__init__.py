"""spotguard PKI: the webhook CA and serving certificates."""
