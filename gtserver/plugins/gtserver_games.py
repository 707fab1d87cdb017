"""The built-in games, registered exactly as a third-party game would be."""

from gtserver.games import GameFactory
from gtserver.games.chat import Chat
from gtserver.games.echo import Echo
from gtserver.games.matrix import MatrixGameFactory, PrisonersDilemma, StagHunt
from gtserver.games.tictactoe import TicTacToe
from gtserver.games.ultimate import UltimateTicTacToe
from gtserver.games.yahtzee import Yahtzee

ultimate_tic_tac_toe = GameFactory(UltimateTicTacToe)
echo = GameFactory(Echo)
chat = GameFactory(Chat)
tic_tac_toe = GameFactory(TicTacToe)
prisoners_dilemma = MatrixGameFactory(PrisonersDilemma)
stag_hunt = MatrixGameFactory(StagHunt)
yahtzee = GameFactory(Yahtzee)
