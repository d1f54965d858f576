"""The simulated world's hook points. PLACEHOLDER: owned by the hooks work."""


class World:
    def __init__(self, kern):
        self.kern = kern

    def attached_objects(self):
        return set()
