-- Deferred (TOK) meetings wait for the mailbox worker to complete them as the organizer; the
-- worker looks for them every cycle, so they are indexed apart from the rest.
CREATE INDEX meeting_deferred ON meeting (integration, updated_at) WHERE state = 'deferred';
