-- Tracktion's core: audio files, the tracklists found in them, and analysis results.
CREATE TABLE audio_files (
    id          bigserial PRIMARY KEY,
    path        text NOT NULL UNIQUE,
    sha256      text NOT NULL,
    format      text NOT NULL CHECK (format IN ('mp3', 'flac', 'wav', 'aac', 'ogg')),
    duration_ms integer NOT NULL CHECK (duration_ms > 0),
    size_bytes  bigint NOT NULL CHECK (size_bytes > 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tracklists (
    id            bigserial PRIMARY KEY,
    audio_file_id bigint NOT NULL REFERENCES audio_files (id) ON DELETE CASCADE,
    source        text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tracklists_audio_file_id_idx ON tracklists (audio_file_id);

CREATE TABLE tracklist_entries (
    id           bigserial PRIMARY KEY,
    tracklist_id bigint NOT NULL REFERENCES tracklists (id) ON DELETE CASCADE,
    position     integer NOT NULL CHECK (position > 0),
    artist       text NOT NULL,
    title        text NOT NULL,
    start_ms     integer NOT NULL CHECK (start_ms >= 0),
    UNIQUE (tracklist_id, position)
);

CREATE TABLE analysis_results (
    id            bigserial PRIMARY KEY,
    audio_file_id bigint NOT NULL REFERENCES audio_files (id) ON DELETE CASCADE,
    analyzer      text NOT NULL,
    bpm           numeric(6, 2),
    musical_key   text,
    energy        real CHECK (energy BETWEEN 0 AND 1),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX analysis_results_audio_file_id_idx ON analysis_results (audio_file_id);
