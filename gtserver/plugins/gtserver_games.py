"""The built-in games, registered exactly as a third-party game would be."""

from gtserver.games import GameFactory
from gtserver.games.chat import OPTIONS as CHAT_OPTIONS
from gtserver.games.chat import SETTING_NAMES as CHAT_SETTING_NAMES
from gtserver.games.chat import Chat
from gtserver.games.echo import Echo
from gtserver.games.matrix import PAYOFFS, ROUNDS, MatrixGameFactory, PrisonersDilemma, StagHunt
from gtserver.games.tictactoe import TicTacToe
from gtserver.games.ultimate import UltimateTicTacToe
from gtserver.games.yahtzee import Yahtzee

ultimate_tic_tac_toe = GameFactory(UltimateTicTacToe)
echo = GameFactory(Echo)
chat = GameFactory(Chat, options=CHAT_OPTIONS, setting_names=CHAT_SETTING_NAMES)
tic_tac_toe = GameFactory(TicTacToe)
prisoners_dilemma = MatrixGameFactory(PrisonersDilemma, options=(ROUNDS, PAYOFFS))
stag_hunt = MatrixGameFactory(StagHunt, options=(ROUNDS,))
yahtzee = GameFactory(Yahtzee)
