"""Twilio: connection profiles, the brokered client, connection commands and the local emulator."""
