"""spotguard admission transport: AdmissionReview over HTTPS, the CLI and the server."""
