"""The built-in games, registered exactly as a third-party game would be."""

from gtserver.games import GameFactory
from gtserver.games.ultimate import UltimateTicTacToe

ultimate_tic_tac_toe = GameFactory(UltimateTicTacToe)
