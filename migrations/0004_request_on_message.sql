-- A stored message carries its client request id itself, instead of a row of its own in
-- `requests` with three indexes to keep: a send then writes one row and one id index
-- entry. A conversation read back has every message of the last day (the part it reads
-- reaches that far), so the retry of any request still remembered finds its message
-- there; ids older than a day are ignored when read. The ids `requests` holds (the last
-- day's) move onto their messages.
ALTER TABLE messages ADD COLUMN request TEXT;
UPDATE messages SET request = r.request
    FROM requests AS r
    WHERE r.conversation = messages.conversation AND r.seq = messages.seq;
DROP TABLE requests;
