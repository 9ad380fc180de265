DROP TABLE metadata;
ALTER TABLE audio_files DROP COLUMN title;
