"""authmesh: device-bound machine-to-machine authentication."""
