DROP TABLE notifications;
DROP INDEX analysis_results_pending_idx;
ALTER TABLE analysis_results DROP COLUMN status;
