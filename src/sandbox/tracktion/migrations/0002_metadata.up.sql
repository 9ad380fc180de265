-- Free-form tags per audio file, and a display title.
ALTER TABLE audio_files ADD COLUMN title text;

CREATE TABLE metadata (
    audio_file_id bigint NOT NULL REFERENCES audio_files (id) ON DELETE CASCADE,
    key           text NOT NULL,
    value         text NOT NULL,
    PRIMARY KEY (audio_file_id, key)
);
