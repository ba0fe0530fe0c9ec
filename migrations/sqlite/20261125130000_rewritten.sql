-- Whether the recording's container was rewritten (WebM with Duration and
-- Cues) or is the chunks joined as they came.
ALTER TABLE sessions ADD COLUMN recording_rewritten INTEGER;
