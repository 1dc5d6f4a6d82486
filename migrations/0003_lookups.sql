-- What reading state on demand needs, so start-up reads no history: a conversation's
-- remembered request ids with it, and the conversations active lately (recall windows
-- and throttles still open at start) without scanning every message.
CREATE INDEX requests_by_conversation ON requests (conversation, seq);
CREATE INDEX conversations_by_activity ON conversations (last_activity);
