"""Video calls (视频客服): one tap from the chat to a recorded (双录) video call with an agent, relayed and
recorded by the server with aiortc. See README "Video calls" for the API, the lifecycle and the design."""
