"""Federation between countries (ROBERT's ECC, PROTOCOL.md 8 step 1).

Sender: the matching worker puts the contacts whose ECC names another country in the outbox
(:mod:`.outbox`) in the step that validates them; ``robert federation forward`` (:mod:`.forwarder`)
delivers them to the partners' federation services, in batches idempotent by id, with retries and
back-off. Receiver: ``robert federation serve`` (:mod:`.service`) accepts the batches of authenticated
partners over mutual TLS (:mod:`.tls`), deduplicates them by id (:mod:`.received`), and stores their
contacts as contacts to match (:mod:`robert_server.contacts`, marked with their origin), which the
matching worker validates with its own day keys and scores like a local upload.
"""
