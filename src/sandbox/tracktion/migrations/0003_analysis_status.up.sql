-- Analysis becomes a queue: a status per result, and the notifications sent about it.
ALTER TABLE analysis_results
    ADD COLUMN status text NOT NULL DEFAULT 'done'
    CHECK (status IN ('queued', 'running', 'done', 'failed'));
CREATE INDEX analysis_results_pending_idx ON analysis_results (status) WHERE status <> 'done';

CREATE TABLE notifications (
    id                 bigserial PRIMARY KEY,
    analysis_result_id bigint REFERENCES analysis_results (id) ON DELETE SET NULL,
    channel            text NOT NULL,
    sent_at            timestamptz NOT NULL DEFAULT now()
);
