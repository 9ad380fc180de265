DROP TABLE analysis_results;
DROP TABLE tracklist_entries;
DROP TABLE tracklists;
DROP TABLE audio_files;
