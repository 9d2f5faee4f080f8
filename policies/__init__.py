"""spotguard policy engine: pure functions from (pod, request, policy) to a decision."""
