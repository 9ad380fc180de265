-- A small, consistent data set for rehearsals (schema version 3).
INSERT INTO audio_files (path, sha256, format, duration_ms, size_bytes, title) VALUES
    ('/library/sets/2024-01-12-boiler-room.flac', repeat('a1', 32), 'flac', 3600000, 612000000, 'Boiler Room Berlin'),
    ('/library/sets/2024-01-13-essential-mix.mp3', repeat('b2', 32), 'mp3', 7200000, 172800000, 'Essential Mix'),
    ('/library/sets/2024-01-14-warehouse.wav', repeat('c3', 32), 'wav', 5400000, 952000000, 'Warehouse Project'),
    ('/library/tracks/opening.ogg', repeat('d4', 32), 'ogg', 240000, 5800000, 'Opening');

INSERT INTO tracklists (audio_file_id, source)
SELECT id, CASE WHEN format = 'ogg' THEN 'manual' ELSE '1001tracklists' END FROM audio_files;

INSERT INTO tracklist_entries (tracklist_id, position, artist, title, start_ms)
SELECT t.id, n, 'Artist ' || n, 'Track ' || n, (n - 1) * 300000
FROM tracklists t CROSS JOIN generate_series(1, 5) AS n;

INSERT INTO analysis_results (audio_file_id, analyzer, bpm, musical_key, energy, status)
SELECT id, 'essentia', 122 + id, '8A', 0.7, CASE WHEN id = 4 THEN 'queued' ELSE 'done' END
FROM audio_files;

INSERT INTO metadata (audio_file_id, key, value)
SELECT id, 'genre', 'techno' FROM audio_files;

INSERT INTO notifications (analysis_result_id, channel)
SELECT id, 'slack' FROM analysis_results WHERE status = 'done';
